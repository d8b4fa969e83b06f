"""``python -m ferlit fit|validate|predict|data``: the pipeline's stages (:mod:`ferlit.cli`)."""

from ferlit.cli import main
from ferlit.errors import data_warnings_as_lines, quiet_closed_stdout

if __name__ == "__main__":
    with quiet_closed_stdout(), data_warnings_as_lines():
        main()
