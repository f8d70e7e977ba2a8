"""``python -m trt_quant.cli``: the ``trt-quant`` command."""

from trt_quant.cli.main import main

main()
