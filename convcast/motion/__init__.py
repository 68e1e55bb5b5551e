"""Motion: estimated from the latest frames (`estimate.py`, pysteps' methods) and used to move a
field along it (`advect.py`, semi-Lagrangian, in torch: batched, differentiable, equal to pysteps'
`extrapolate`), and perturbed per ensemble member as STEPS perturbs it (`perturb.py`). Motion is
an explicit input: the `optical_flow` baseline and the anchored forecasters take it from here or
from the data pipeline (`convcast.data.motion`), never estimate it their own way.
"""

from convcast.motion.advect import advect, displacements
from convcast.motion.estimate import (
    METHODS,
    batch_motion,
    check_method,
    estimate_motion,
    window_motion,
)

__all__ = ["METHODS", "advect", "batch_motion", "check_method", "displacements",
           "estimate_motion", "window_motion"]
