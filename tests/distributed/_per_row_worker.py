"""The 2-rank job of ``test_per_row_values_ddp.py``, run as ``python _per_row_worker.py <job> <out_dir> <devices>
'<options JSON>'`` (or, on one process, through :func:`run`): MiniOneRec's beam and exact test on 13 synthetic rows
with ``vlkit.callbacks.PerRowValues`` saving each row's target rank to ``<out_dir>/row_ranks.json``. The Trainer and
the report are those of ``_worker.py`` (this job is added to its ``JOBS``)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
import _worker  # noqa: E402  (the other 2-rank jobs: the quiet DDP Trainer and the per-rank report)


def minionerec_rows(out_dir: Path, devices: int) -> tuple:
    """Test an untrained scratch MiniOneRec (5 beams; exact ranking of the split's first 7 rows) on 13 rows."""
    from recsys.data.sequences import SeqRecDataModule
    from recsys.methods.minionerec import LitMiniOneRec
    from vlkit.callbacks import PerRowValues

    dm = SeqRecDataModule(dataset="synthetic", eval_batch_size=3, max_train_samples=16, max_eval_samples=13)
    model = LitMiniOneRec(sid_path="random-8x2", tasks=("sid_seq",), decoder=dict(hidden_size=32, num_layers=1, num_heads=2),
                          evaluation=dict(val_num_beams=5, test_num_beams=5, max_exact_rows=7, ks=(1, 5, 20)))
    trainer = _worker.trainer_for(devices, out_dir, [PerRowValues(str(out_dir / "row_ranks.json"))])
    trainer.test(model, dm)
    return trainer, model, None, {}


_worker.JOBS["minionerec_rows"] = minionerec_rows
run = _worker.run  # run(job, out_dir, devices, options) -> this rank's report

if __name__ == "__main__":
    torch.set_num_threads(1)
    run(sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]), json.loads(sys.argv[4]))
