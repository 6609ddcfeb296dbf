"""Why SupCon stays collapsed in the vision reproduction (issue 14, item 2): a diagnostic, not a test.

The vision reproduction's setup (``contrasphere.reproduce.vision``: the small convnet, SGD lr 0.4, bf16) at a small
budget (10,000 training images, 2 epochs, 78 steps), with one factor changed at a time. For each run: the final
training loss (a fully collapsed batch of 2N = 512 rows scores exactly log(511) = 6.2363), the held-out alignment
and uniformity (0 and 0 when collapsed), and linear / kNN accuracies of the encoder and of the output.

    python scripts/supcon_collapse_diagnostic.py    # about 5 minutes on 2 CPU cores; writes the JSON below
"""

import json
import time
from pathlib import Path

from contrasphere.reproduce import vision as V

OUT = Path(__file__).resolve().parents[1] / "docs" / "reproduce" / "vision" / "supcon_diagnostic.json"
base = V._base(0.2, False)  # 10,000 images
base.update({"train.epochs": 2})
cases = [
    ("supcon tau=0.1 (report)", "supcon", {"temperature": 0.1}, {"model.out_dim": 2}),
    ("supcon tau=0.1 fp32", "supcon", {"temperature": 0.1}, {"model.out_dim": 2, "train.precision": "fp32"}),
    ("supcon tau=0.5", "supcon", {"temperature": 0.5}, {"model.out_dim": 2}),
    ("supcon tau=0.1 lr=0.05", "supcon", {"temperature": 0.1}, {"model.out_dim": 2, "optim.lr": 0.05}),
    ("supcon tau=0.1 dim=128", "supcon", {"temperature": 0.1}, {}),
    ("nt_xent tau=0.5 (report)", "nt_xent", {"temperature": 0.5}, {"model.out_dim": 2}),
]
out = []
for label, loss, args, extra in cases:
    t = time.time()
    r = V._one(label, loss, args, base, extra)
    row = {
        k: r[k]
        for k in (
            "label",
            "steps",
            "alignment",
            "uniformity",
            "linear_accuracy",
            "knn_accuracy",
            "output_linear_accuracy",
        )
    }
    row["last_loss"] = r["log"][-1].get("loss") if r["log"] else None
    row["seconds"] = time.time() - t
    out.append(row)
    print(json.dumps(row), flush=True)
    OUT.write_text(json.dumps(out, indent=1) + "\n")
