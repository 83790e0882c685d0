"""Set-up for every pytest run here, nbval included: the reproducible numeric mode (`make` asks for it
with RANKDML_REPRODUCIBLE=1) is put into the environment before any Jupyter kernel is started."""
from rankdml import reproducible

if reproducible.requested():
    reproducible.apply_environment()
