"""Ray job entrypoint: `python -m jobs.prepare --config prepare.yaml` (same options as
`nmt prepare`)."""

import sys

from jobs._stage import run_stage

if __name__ == "__main__":
    sys.exit(run_stage("prepare"))
