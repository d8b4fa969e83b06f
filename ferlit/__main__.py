"""``python -m ferlit fit|validate|predict|data``: the pipeline's stages (:mod:`ferlit.cli`)."""

import sys

from ferlit.errors import data_warnings_as_lines, quiet_closed_stdout

if __name__ == "__main__":
    from ferlit.help_cache import print_help

    def _main() -> None:
        from ferlit.cli import main

        main()

    with quiet_closed_stdout(), data_warnings_as_lines():
        # ``fit --help`` is printed without importing Lightning (ferlit.help_cache); its text
        # lists the callbacks imported, more here than by python -m ferlit.fit: a file of its own.
        argv = sys.argv[1:]
        if argv[:1] != ["fit"] or not print_help("ferlit-fit", argv[1:], _main):
            _main()
else:
    from ferlit.cli import main  # noqa: F401 (ferlit.__main__.main, as before)
