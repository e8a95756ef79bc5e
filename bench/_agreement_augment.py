"""Which augmentations make the agreement pool's disagreement track held-out disagreement (exploration, not
part of the job; it chose `compression.agreement`'s NOISE_SCALE and MIXUP_LAMBDA).

    PYTHONPATH=src .venv/bin/python bench/_agreement_augment.py [checkpoint] [out.json]

userid's checkpoint (default runs/bench-tasks/userid.pt), pruned uniformly to 0.75/0.5/0.35/0.25 of every
channel group (top-L1), or with the GRU's recurrence dropped, or unpruned, each fine-tuned 100 and 300 steps
distilled from the original; per network, its top-1 disagreement with the original (%) on raw training inputs,
the full validation split (the target: never trained on), the test split (for reference), Gaussian noise of
0.1/0.3/0.5/1.0 x each feature's std, and mixup with lambda uniform in [0.7|0.8|0.9, 1]; 2000 inputs each.
One JSON line per network on stdout, all rows to out.json (default runs/diag/agreement_augment.json)."""
import copy, json, sys
import numpy as np, torch
from fastdeepiot import tasks
from fastdeepiot.checkpoints import load_checkpoint
from fastdeepiot.compression.agreement import predictions
from fastdeepiot.compression.finetune import finetune
from fastdeepiot.compression.surgery import prune_channels
from fastdeepiot.compression.importance import l1_importance
from fastdeepiot.compression.moves.recurrence import drop_recurrence
from fastdeepiot.graph.channels import trace_channels
torch.set_num_threads(1)
t = tasks.get("userid")
orig, _ = load_checkpoint(sys.argv[1] if len(sys.argv) > 1 else "runs/bench-tasks/userid.pt", task=t)
orig.eval()
tr_dl = t.loaders(batch_size=64, seed=0)[0]
tr, va, te = t.datasets()
x = torch.zeros(1, 6, 128)
g = torch.Generator().manual_seed(0)
src = torch.cat([tr.x, va.x])
std = src.std(0, keepdim=True)
N = 2000
aug = {}
for s in (0.1, 0.3, 0.5, 1.0):
    i = torch.randint(len(src), (N,), generator=g)
    aug[f"noise{s}"] = src[i] + s * std * torch.randn((N, *src.shape[1:]), generator=g)
for lo in (0.7, 0.8, 0.9):
    a = torch.randint(len(src), (N,), generator=g); b = torch.randint(len(src), (N,), generator=g)
    lam = (lo + (1 - lo) * torch.rand(N, generator=g)).view(-1, 1, 1)
    aug[f"mix{lo}"] = lam * src[a] + (1 - lam) * src[b]
sets = {"train": tr.x[:2000], "val": va.x, "test": te.x, **aug}
ref = {k: predictions(orig, v) for k, v in sets.items()}
cg = trace_channels(orig, x); groups = [gg for gg in cg.groups() if gg.width > 1]
imp = l1_importance(orig, cg, groups)
nets = []
for w in (0.75, 0.5, 0.35, 0.25):
    keep = {gg.name: sorted(int(i) for i in np.argsort(-imp[gg.name], kind="stable")[:max(1, round(w * gg.width))]) for gg in groups}
    nets.append((f"uniform x{w}", prune_channels(copy.deepcopy(orig), x, keep)))
m = copy.deepcopy(orig); drop_recurrence(m, "gru"); nets.append(("drop gru", m))
m = copy.deepcopy(orig); nets.append(("original", m))
rows = []
for name, m in nets:
    for steps in (100, 300):
        mm = copy.deepcopy(m)
        finetune(mm, tr_dl, steps, lr=1e-3, teacher=orig, seed=0)
        te_acc = float((predictions(mm, te.x) == te.y).float().mean()) * 100
        va_acc = float((predictions(mm, va.x) == va.y).float().mean()) * 100
        row = {"net": name, "steps": steps, "test_acc": te_acc, "val_acc": va_acc}
        row.update({k: 100 * float((predictions(mm, v) != ref[k]).float().mean()) for k, v in sets.items()})
        rows.append(row)
        print(json.dumps({k: (round(v, 2) if isinstance(v, float) else v) for k, v in row.items()}), flush=True)
out = sys.argv[2] if len(sys.argv) > 2 else "runs/diag/agreement_augment.json"
json.dump(rows, open(out, "w"), indent=1)
