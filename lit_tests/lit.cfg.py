# lit configuration: ONNX text in, `hawqc-opt -p ...`, FileCheck on the printed IR.
# Tools are run through sys.executable because lit drops PYTHONPATH and VIRTUAL_ENV.
import os
import shlex
import sys

import lit.formats

config.name = "hawqc"
config.test_format = lit.formats.ShTest(execute_external=False)
config.suffixes = [".onnxtxt", ".test"]
config.test_source_root = os.path.dirname(__file__)
config.test_exec_root = os.path.join(config.test_source_root, "Output")
config.excludes = ["Output", "Inputs", "lit.cfg.py"]

python = shlex.quote(sys.executable)
config.substitutions.append(
    ("%hawqc-opt", f"{python} -c 'import sys; from hawqc.cli import opt_main; sys.exit(opt_main())'")
)
config.substitutions.append(("%filecheck", f"{python} -m filecheck"))
config.substitutions.append(("%python", python))
config.environment["PYTHONHASHSEED"] = "0"
# Import hawqc from the tree these tests belong to (a git worktree), not whichever one is installed.
config.environment["PYTHONPATH"] = os.path.dirname(config.test_source_root)
