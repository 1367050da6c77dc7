"""Evaluate a saved face-gender model on labelled folders of images.

The front door that users run as `python test_script.py`;
`pip install -e .` installs it as `facegender-test` too. The command line is
`facegender.cli.evaluate`, and `python test_script.py --help` lists every flag.
"""

import sys

from facegender.cli.evaluate import main

if __name__ == "__main__":
    sys.exit(main())
