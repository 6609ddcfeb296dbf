"""Thin ``nn.Module`` wrappers around :mod:`contrasphere.functional`, the loss registry and the distributed wrapper.

Each module only holds hyperparameters (or learnable scalars such as CLIP's logit scale) and calls its function;
its ``forward`` arguments are named like the model outputs it consumes (``z_a``, ``z_b``, ``z``, ``labels``), so a
training step is ``loss_fn(**model_out)``. The files mirror :mod:`contrasphere.functional` one to one; the stateful
losses (:mod:`.isogclr`, :mod:`.amcl`) and :class:`GatherLoss` have files of their own. Every module is registered
under a short name::

    >>> import contrasphere
    >>> loss_fn = contrasphere.create_loss("nt_xent", temperature=0.2)
    >>> contrasphere.list_losses()[:3]
    ['align_uniform', 'align_uniform_queue', 'alignment']

Every loss that reduces over pairs also takes ``block_size``, the pairwise engine's tiling (None: automatic; 0:
dense; a positive number: tiles of that size; see :mod:`contrasphere.pairwise`).
"""

from .align_uniform import AlignmentLoss, AlignUniformLoss, UniformityLoss
from .amcl import AMCLLoss
from .beyond import BarlowTwinsLoss, SpectralContrastiveLoss, SwAVLoss
from .contrastive import CLIPLoss, DCLLoss, DCLWLoss, InfoNCELoss, NTXentLoss, SigLIPLoss, SupConLoss
from .gather import GatherLoss
from .isogclr import ISogCLRLoss
from .matryoshka import MatryoshkaLoss
from .mixing import FeatureTransformationLoss, IMixLoss, MoCHiLoss
from .moco import AlignUniformQueueLoss, MoCoLoss
from .multiview import (
    CACRLoss,
    CMCLoss,
    CWCLLoss,
    DecoupledUniformityLoss,
    MACLLoss,
    MarginInfoNCELoss,
    PolyViewLoss,
    SymileLoss,
)
from .negatives import DebiasedNTXentLoss, HardNegativeNTXentLoss
from .registry import (
    FunctionLoss,
    LossSpec,
    create_loss,
    function_loss,
    list_losses,
    loss_spec,
    loss_spec_of,
    register_loss,
)
from .regularizers import GORLoss, KoLeoLoss, MMCRLoss, SIGRegLoss, VICRegLoss
from .sogclr import SogCLRLoss
from .supervised import SupervisedCrossEntropyLoss
from .variants import EuclideanCLIPLoss, GTEInfoNCELoss, HNNCELoss, KernelInfoNCELoss

__all__ = [
    "AMCLLoss",
    "AlignUniformLoss",
    "AlignUniformQueueLoss",
    "AlignmentLoss",
    "BarlowTwinsLoss",
    "CACRLoss",
    "CLIPLoss",
    "CMCLoss",
    "CWCLLoss",
    "DCLLoss",
    "DCLWLoss",
    "DebiasedNTXentLoss",
    "DecoupledUniformityLoss",
    "FeatureTransformationLoss",
    "FunctionLoss",
    "GORLoss",
    "GatherLoss",
    "HardNegativeNTXentLoss",
    "IMixLoss",
    "ISogCLRLoss",
    "InfoNCELoss",
    "KoLeoLoss",
    "LossSpec",
    "MACLLoss",
    "MMCRLoss",
    "MarginInfoNCELoss",
    "MoCHiLoss",
    "MoCoLoss",
    "NTXentLoss",
    "PolyViewLoss",
    "SIGRegLoss",
    "SigLIPLoss",
    "SogCLRLoss",
    "SpectralContrastiveLoss",
    "SupConLoss",
    "SupervisedCrossEntropyLoss",
    "SwAVLoss",
    "SymileLoss",
    "UniformityLoss",
    "VICRegLoss",
    "create_loss",
    "function_loss",
    "list_losses",
    "loss_spec",
    "loss_spec_of",
    "register_loss",
    "EuclideanCLIPLoss",
    "GTEInfoNCELoss",
    "HNNCELoss",
    "KernelInfoNCELoss",
    "MatryoshkaLoss",
]
