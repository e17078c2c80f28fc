"""The conversion progress bar."""
import io

from caffe2keras.graph import load_graph
from caffe2keras.progress import ProgressBar
from caffe2keras.saving import convert_to_file, graph_bytes

from .shared import model_files


class _Tty(io.StringIO):
    def isatty(self):
        return True


def test_bar_draws_on_a_terminal_for_big_work_only():
    quiet = io.StringIO()
    ProgressBar(1 << 30, "x", stream=quiet)(1 << 29)
    assert quiet.getvalue() == ""            # not a terminal
    small = _Tty()
    ProgressBar(1 << 10, "x", stream=small)(1 << 9)
    assert small.getvalue() == ""            # not worth a bar
    tty = _Tty()
    bar = ProgressBar(200e6, "writing m.keras", stream=tty)
    bar(50e6)
    bar(200e6)
    bar.close()
    lines = tty.getvalue().split("\r")
    assert lines[1].startswith("writing m.keras [#######") and " 25% 50/200 MB" in lines[1]
    assert lines[2].rstrip("\n").endswith("100% 200/200 MB") and tty.getvalue().endswith("\n")


def test_convert_reports_every_weight_byte(tmp_path):
    deploy, weights, _, _ = model_files("mtcnn_det3")
    graph = load_graph(deploy, weights)
    seen = []
    convert_to_file(graph, tmp_path / "m.keras", progress=seen.append)
    assert seen == sorted(seen) and seen[-1] == graph_bytes(graph)
