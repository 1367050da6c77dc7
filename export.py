"""Export a saved model to TensorFlow Lite for phones and small boards.

The front door that users run as `python export.py`. The command line is
`facegender.cli.export`, and `python export.py --help` lists every flag.
"""

import sys

from facegender.cli.export import main

if __name__ == "__main__":
    sys.exit(main())
