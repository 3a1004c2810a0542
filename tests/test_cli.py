import subprocess
import sys

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
