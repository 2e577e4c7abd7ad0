"""TaskPrompter (Ye & Xu, ICLR 2023): spatial-channel multi-task prompting, on a ViT or a Swin Transformer.

One registered architecture, ``taskprompter`` (``factory``), builds the variant of the backbone's
family (``backbone_family``): ``vit`` (``TaskPrompter``: a timm ViT whose blocks carry the prompts;
its docstring describes the method) or ``swin`` (``TaskPrompterSwin``, on the prompted Swin of
``prompted_swin``). ``common`` holds what both share (heads, level fusion, initialisation, the
official key-map rules); the variants import it and not each other.
"""

from scenemtl.models.taskprompter.common import ConvHead, PromptedModel, init_vit_weights
from scenemtl.models.taskprompter.factory import taskprompter
from scenemtl.models.taskprompter.prompted_swin import PromptedSwin
from scenemtl.models.taskprompter.swin import TaskPrompterSwin
from scenemtl.models.taskprompter.vit import TaskPrompter

__all__ = ["ConvHead", "PromptedModel", "PromptedSwin", "TaskPrompter", "TaskPrompterSwin", "init_vit_weights", "taskprompter"]
