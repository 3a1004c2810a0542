import subprocess
import sys

import pytest

from sie3d.cli import COMMANDS, main


def test_help_lists_every_subcommand(capsys):
    try:
        main(["--help"])
    except SystemExit:
        pass
    out = capsys.readouterr().out
    for name in COMMANDS:
        assert name in out


def test_user_errors_are_one_line_with_exit_1(capsys, repo_root):
    code = main(["config", "--params", str(repo_root / "params/quick.yaml"), "--set", "guidance.delta=3"])
    err = capsys.readouterr().err
    assert code == 1 and "did you mean 'guidance.delta_t'" in err and "Traceback" not in err
    assert main(["config", "--params", "nope.yaml"]) == 1


def test_weights_list_and_missing_download_message(capsys, sie3d_home):
    assert main(["weights", "list"]) == 0
    assert "arc2face-unet" in capsys.readouterr().out
    assert main(["weights", "verify", "arc2face-unet"]) == 1


def test_console_script_runs():
    out = subprocess.run([sys.executable, "-m", "sie3d.cli", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "weights" in out.stdout


def _modules_after(argv: list[str], repo_root) -> set[str]:
    """Torch and the command modules (``sie3d.commands.<name>``, not the shared ``_*`` helpers) a fresh
    process has imported after ``main(argv)``."""
    code = ("import sys\nfrom sie3d.cli import main\ntry:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
            "print(*(m for m in sys.modules if m == 'torch' or m.startswith('sie3d.commands.') and '._' not in m), file=sys.stderr)")
    done = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, cwd=repo_root)
    return set(done.stderr.strip().splitlines()[-1].split()) if done.stderr.strip() else set()


def test_top_level_parser_imports_no_command_and_not_torch(repo_root):
    for argv in (["--help"], ["--version"], []):
        assert _modules_after(argv, repo_root) == set(), argv


def test_a_command_imports_only_its_own_module(repo_root):
    assert _modules_after(["view", "--help"], repo_root) == {"sie3d.commands.view"}
    assert _modules_after(["config", "--help"], repo_root) == {"sie3d.commands.config"}


def test_a_command_without_its_module_says_which_issue_delivers_it(capsys, monkeypatch):
    monkeypatch.setitem(COMMANDS, "teleport", ("move an avatar elsewhere", "issue 99"))
    assert main(["teleport"]) == 2
    assert "sie3d teleport: not implemented yet; it is delivered by issue 99" in capsys.readouterr().err


def test_bench_cli_times_help_and_view(capsys):
    assert main(["bench", "cli", "--repeats", "1"]) == 0
    out = capsys.readouterr().out
    assert "load average" in out and "\nhelp " in out and "\nview " in out
