"""The `brainscore` entry point: help lists every command group, a closed output pipe is not an error."""
import subprocess
import sys

from benchmarks_it_maps.cli import COMMAND_MODULES, build_parser, main


def test_help_lists_every_command_group(capsys):
    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices
    for expected in ("data", "score", "results", "list", "maps", "layers", "demo", "commit-layers",
                     "convert-keras", "leaderboard", "tradeoff", "harmonize", "sweep", "submission"):
        assert expected in commands
    assert len(COMMAND_MODULES) == 12
    for expected in ("features", "score-features", "integration", "report"):
        assert expected in commands
    assert main([]) == 2  # no command: help, exit 2


def test_closed_pipe_is_not_an_error():
    proc = subprocess.Popen([sys.executable, "-m", "benchmarks_it_maps", "list", "benchmarks"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # the reader (like `| head -0`) leaves before anything is written
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err.decode()
    assert b"Traceback" not in err and b"BrokenPipe" not in err
