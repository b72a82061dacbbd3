"""Ray job entrypoint: `python -m jobs.bulk_translate --config bulk.yaml` (same options as
`nmt bulk-translate`)."""

import sys

from jobs._stage import run_stage

if __name__ == "__main__":
    sys.exit(run_stage("bulk-translate"))
