"""Several `finetune` commands one after another in the same processes, for `accelerate launch` to run: what
`accelerate launch -m finetune.cli CMD ...` does for each command, without starting the processes each time.

    accelerate launch --num_processes N tests/spread_job.py '[["evaluate", ...], ["predict", ...]]'
"""

import json
import sys

from finetune.cli import main

if __name__ == "__main__":
    for command in json.loads(sys.argv[1]):
        main(command)
