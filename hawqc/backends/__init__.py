"""Backends: lower the IR to a project for an HLS tool, and compile its C simulation.

    from hawqc.backends.base import get_backend        # "vivado", "vitis", "catapult", or a plugin
    project = get_backend("vitis").lower(model, outdir)
    from hawqc.backends.csim import compile_csim
    outputs = compile_csim(project).predict(x)

Nothing is imported here, so that `import hawqc` does not import hls4ml.
"""
