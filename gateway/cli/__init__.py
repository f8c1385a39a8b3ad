"""The `killgate` command line: argument parsing, the admin client commands, the demo.

The top layer: may import anything below it, nothing imports it.
"""
