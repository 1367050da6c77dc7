"""Predict male/female for new photos, videos and folders with a saved model.

The front door that users run as `python predict.py`;
`pip install -e .` installs it as `facegender-predict` too. The command line is
`facegender.cli.predict`, and `python predict.py --help` lists every flag.
"""

import sys

from facegender.cli.predict import main

if __name__ == "__main__":
    sys.exit(main())
