"""The notebook API: `analysis.diagnose(path)` and friends, whatever was imported before."""

import analysis
import analysis.diagnosis  # noqa: F401  (importing the subpackage must not shadow the function)


def test_package_level_functions(tmp_path):
    log = tmp_path / "log.csv"
    log.write_text("step,loss\n" + "".join(f"{i},{5 - 0.01 * i + (2 if i == 50 else 0)}\n" for i in range(1, 101)))
    result = analysis.diagnose(log)
    assert result.run_class == "spiky" and len(result.spikes) == 1
    assert callable(analysis.load_run) and callable(analysis.write_report)
