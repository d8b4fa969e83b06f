"""``python -m ferlit.evaluate``: score a checkpoint (the ``predict`` stage of ``python -m ferlit``).

The command lives in :mod:`ferlit.evaluation.evaluate`; this entry point keeps the README's
commands working.
"""

from ferlit.evaluation.evaluate import main

if __name__ == "__main__":
    from ferlit.errors import data_warnings_as_lines, quiet_closed_stdout

    with quiet_closed_stdout(), data_warnings_as_lines():
        main()
