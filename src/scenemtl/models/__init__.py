"""Architectures, registered by name (a module each; packages for the multi-file ATRC and TaskPrompter),
the timm backbone adapters (``backbones``) and the building blocks they share (``layers``)."""

from scenemtl.models import hps as _hps  # noqa: F401  (registers hps, stl)
from scenemtl.models import invpt as _invpt  # noqa: F401  (registers invpt)
from scenemtl.models import taskprompter as _taskprompter  # noqa: F401  (registers taskprompter)
from scenemtl.models import atrc as _atrc  # noqa: F401  (registers atrc, atrc_search)
from scenemtl.models import cross_stitch as _cross_stitch  # noqa: F401  (registers cross_stitch)
from scenemtl.models import diffusionmtl as _diffusionmtl  # noqa: F401  (registers diffusionmtl)
from scenemtl.models import mtan_deeplab as _mtan_deeplab  # noqa: F401  (registers mtan_deeplab)
from scenemtl.models import mtan_wrn as _mtan_wrn  # noqa: F401  (registers mtan_wrn)
from scenemtl.models import mtinet as _mtinet  # noqa: F401  (registers mtinet)
from scenemtl.models import padnet as _padnet  # noqa: F401  (registers padnet)
from scenemtl.models import segnet as _segnet  # noqa: F401  (registers segnet, segnet_dense, stan, mtan)
from scenemtl.models import xtam as _xtam  # noqa: F401  (registers xtam)
from scenemtl.models.backbones import SUGGESTED_BACKBONES, Backbone
from scenemtl.models.base import MultiTaskModel
from scenemtl.models.output import ModelOutput
from scenemtl.models.registry import MODELS, build_model, register_model

__all__ = ["MODELS", "SUGGESTED_BACKBONES", "Backbone", "ModelOutput", "MultiTaskModel", "build_model", "register_model"]
