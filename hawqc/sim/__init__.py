"""The reference executor: what a QONNX graph computes, on a whole batch at once, with numpy.

    from hawqc.sim import Executor, execute
    ex = Executor(model)                 # mode="semantic": bit-identical to qonnx's execute_onnx
    outs = ex.run({"input": x})          # dict of output name -> array; x may hold any batch size
    outs = execute(model, x)             # one-off, for a graph with a single input
"""

from hawqc.sim.executor import Executor, execute

__all__ = ["Executor", "execute"]
