"""HN-NCE (Radenovic et al., DiHT, CVPR 2023, Eq. 3-5) as the public PyTorch ports of the paper write it.

The authors' repository (github.com/facebookresearch/diht) ships the models, not the training loss; this is the
``HardNegativeNCE`` module that circulates in public code (one beta for both directions there, two here, as the
paper's beta1 and beta2), with one fix: the ports divide the exponentiated scores by their row sums without
``keepdim``, which broadcasts the sum of row ``j`` onto column ``j``; here each row is normalised by its own sum, as
the paper's weights are. The ports sum the two directions (as the paper does).
"""

from __future__ import annotations

import torch


def hard_negative_nce(video_embds, text_embds, temperature, alpha, beta1, beta2):
    batch_size = video_embds.size(0)
    sim_matrix = video_embds @ text_embds.T / temperature
    nominator = torch.diagonal(sim_matrix)
    beta_sim1 = beta1 * sim_matrix
    beta_sim2 = beta2 * sim_matrix
    w_v2t = (
        (batch_size - 1)
        * torch.exp(beta_sim1)
        / (torch.exp(beta_sim1).sum(dim=1, keepdim=True) - torch.exp(torch.diagonal(beta_sim1))[:, None])
    )
    w_t2v = (
        (batch_size - 1)
        * torch.exp(beta_sim2)
        / (torch.exp(beta_sim2).sum(dim=0, keepdim=True) - torch.exp(torch.diagonal(beta_sim2))[None, :])
    )
    # replace the diagonal terms of w_v2t and w_t2v with alpha
    w_v2t = w_v2t.clone()
    w_t2v = w_t2v.clone()
    w_v2t[range(batch_size), range(batch_size)] = alpha
    w_t2v[range(batch_size), range(batch_size)] = alpha
    denominator_v2t = torch.log((torch.exp(sim_matrix) * w_v2t).sum(dim=1))
    denominator_t2v = torch.log((torch.exp(sim_matrix) * w_t2v).sum(dim=0))
    return (denominator_v2t - nominator).mean() + (denominator_t2v - nominator).mean()
