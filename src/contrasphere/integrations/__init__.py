"""The geometry metrics inside the trainers people already use.

Each module here imports its third-party library at module level, so import the one you need (this package itself
imports nothing): the core of contrasphere stays importable with torch and numpy alone.

- :mod:`contrasphere.integrations.torchmetrics` (extra ``contrasphere[torchmetrics]``): ``Alignment``,
  ``Uniformity``, ``EffectiveRank`` and ``ModalityGap`` as :class:`torchmetrics.Metric` s, synchronised over
  processes, for any loop (Lightning's ``self.log`` accepts them directly);
- :mod:`contrasphere.integrations.hf` (extra ``contrasphere[hf]``): ``GeometryCallback``, a Hugging Face
  :class:`transformers.TrainerCallback` that measures a held-out set of positive pairs at every evaluation and
  adds ``eval_alignment``, ``eval_uniformity`` and ``eval_effective_rank`` to the metrics and the logs;
- :mod:`contrasphere.integrations.lightning` (extra ``contrasphere[lightning]``): ``GeometryCallback``, a
  Lightning :class:`~lightning.pytorch.callbacks.Callback` that keeps the most recent embedding pairs a
  ``LightningModule``'s steps return and logs their geometry at the end of each epoch, gathered over DDP ranks.

Every number equals the function of :mod:`contrasphere.metrics` of the same name on the same embeddings, with the
same keyword arguments (the quantities of Wang & Isola, "Understanding Contrastive Representation Learning through
Alignment and Uniformity on the Hypersphere", ICML 2020; the effective rank of Garrido et al., "RankMe", ICML 2023;
the modality gap of Liang et al., "Mind the Gap", NeurIPS 2022). See docs/integrations.md.
"""

__all__: list[str] = []
