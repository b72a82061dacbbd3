"""Ray job entrypoint: `python -m jobs.train --config train.yaml` (same options as `nmt train`)."""

import sys

from jobs._stage import run_stage

if __name__ == "__main__":
    sys.exit(run_stage("train"))
