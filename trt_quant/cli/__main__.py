"""``python -m trt_quant.cli.main``: the ``trt-quant`` command."""

from trt_quant.cli.main.main import main

main()
