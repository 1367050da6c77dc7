"""Train the MobileNetV2 male/female face classifier.

The front door that users run as `python train_model.py`;
`pip install -e .` installs it as `facegender-train` too. The command line is
`facegender.cli.train`, and `python train_model.py --help` lists every flag.
"""

import sys

from facegender.cli.train import main

if __name__ == "__main__":
    sys.exit(main())
