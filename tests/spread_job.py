"""Several `finetune` commands one after another in the same processes, for `accelerate launch` to run: what
`accelerate launch -m finetune.cli CMD ...` does for each command, without starting the processes each time; run
by plain python, what `python -m finetune.cli CMD ...` does for each, in one interpreter.

    accelerate launch --num_processes N tests/spread_job.py '[["evaluate", ...], ["predict", ...]]'
    python tests/spread_job.py '[["merge", ...], ["push", ...]]'
"""

import json
import sys

from finetune.cli import main

if __name__ == "__main__":
    for command in json.loads(sys.argv[1]):
        main(command)
