import subprocess
import sys

from geoviz.cli import _find_notebook, main


def test_cli_lists_registries(capsys):
    assert main(["models"]) == 0
    assert "resnet20" in capsys.readouterr().out
    assert main(["datasets"]) == 0
    assert "shapes10" in capsys.readouterr().out


def test_cli_finds_notebooks_by_name():
    assert _find_notebook("quickstart").name == "00_quickstart.ipynb"
    try:
        _find_notebook("quikstart")
    except SystemExit as e:
        assert "closest: '00_quickstart'" in str(e)


def test_console_script_is_installed():
    out = subprocess.run([sys.executable, "-m", "geoviz.cli", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "geoviz demo" in out.stdout
