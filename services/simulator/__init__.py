"""Built-in simulated LLM provider: OpenAI Chat Completions + Anthropic Messages over HTTP.

Deterministic replies, SSE streaming, usage counts and fault injection; see ``docs/simulator.md``.
"""

from services.simulator.faults import FaultResolver, FaultSpecError, fault_from_spec, parse_fault_spec
from services.simulator.server import SimulatorServer
from shared.schemas.simulator import FaultConfig, SimulatorConfig

__all__ = [
    "FaultConfig",
    "FaultResolver",
    "FaultSpecError",
    "SimulatorConfig",
    "SimulatorServer",
    "fault_from_spec",
    "parse_fault_spec",
]
