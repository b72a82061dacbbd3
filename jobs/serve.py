"""Ray job entrypoint: `python -m jobs.serve --config serve.yaml` (same options as `nmt serve`)."""

import sys

from jobs._stage import run_stage

if __name__ == "__main__":
    sys.exit(run_stage("serve"))
