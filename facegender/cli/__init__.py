"""The command line, the top floor: each script's flags in argument groups, checked once and
built into a frozen config (train, evaluate, predict, export; the flags they share and the one
exit-code mapping in options), then handed to the package. Nothing below imports it.

May import: every other sub-package.
"""
