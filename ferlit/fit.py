"""``python -m ferlit.fit``: train (the ``fit`` stage of ``python -m ferlit``).

The command line lives in :mod:`ferlit.training.cli`; this entry point keeps the README's commands
and W&B sweeps (``program: ferlit.fit``) working.
"""

from ferlit.training.cli import main

if __name__ == "__main__":
    from ferlit.errors import data_warnings_as_lines, quiet_closed_stdout

    with quiet_closed_stdout(), data_warnings_as_lines():
        main()
