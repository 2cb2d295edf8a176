"""Speech tokens -> mel by conditional flow matching (stage 4).

- :mod:`flow.cfm`: the maths (OT-CFM loss, classifier-free guidance, Euler/midpoint solver, schedules)
- :mod:`flow.backbone`: the vector-field network (LLM-shaped blocks, adaLN time conditioning, chunk masks)
- :mod:`flow.model`: conditioning (tokens, in-context prompt mel, speaker vector), generate/stream, save/load
- :mod:`flow.data`, :mod:`flow.train`, :mod:`flow.report`: data, Lightning training, dev report
"""

from flow.cfm import CFMConfig
from flow.config import FlowConfig
from flow.model import FlowCheckpointError, FlowInputError, FlowModel

__all__ = ["CFMConfig", "FlowCheckpointError", "FlowConfig", "FlowInputError", "FlowModel"]
