"""Trained weights for an exported cell: train its best setting again (same seed) and save safetensors."""

from __future__ import annotations

from typing import Any

from archsearch.ir import Cell


def retrain_weights(cell: Cell, task_name: str, hparams: dict[str, Any], search_config: dict[str, Any],
                    path: str, *, data_dir: str | None = None, device: str = "cpu") -> dict[str, Any]:
    """Train ``cell`` on ``task_name`` with ``hparams`` exactly as the search did; save the cell's weights.

    The keys are those of the exported module (``layers.0.weight_h`` ...), so
    ``module.load_state_dict(safetensors.torch.load_file(path))`` works; the
    file's metadata records the task, setting and validation result.
    """
    from safetensors.torch import save_file

    from archsearch.search import evaluation_seed, stored_train_config
    from archsearch.storage import hparams_hash
    from archsearch.tasks import get_task
    from archsearch.train import HyperParams, train_model

    seed = evaluation_seed(cell.structural_hash(), task_name, hparams_hash(hparams))
    task = get_task(task_name, data_dir or search_config.get("data_dir"))
    train_config = stored_train_config(search_config, task_name, data_dir, task)  # as it trained in the search
    result, model = train_model(cell, task, HyperParams.from_dict(hparams), train_config, seed=seed, device=device)
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.cells.state_dict().items()}
    meta = {"task": task_name, "hparams": str(hparams), "valid": f"{result.valid}", "test": f"{result.test}",
            "units": str(result.units), "cell_hash": cell.structural_hash()}
    save_file(tensors, path, metadata=meta)
    return {"valid": result.valid, "test": result.test, "units": result.units}
