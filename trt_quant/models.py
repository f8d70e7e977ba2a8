"""Loading a Hugging Face encoder for a task, from a local directory or a hub id."""

from __future__ import annotations

import inspect
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import transformers

from trt_quant.errors import TrtQuantError
from trt_quant.recipes import Recipe, recipe_for
from trt_quant.tasks.base import Task, TaskModel
from trt_quant.tasks.registry import get_task

MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
DEFAULT_MAX_POSITIONS = 512


@dataclass
class LoadedModel:
    """A model ready for quantization: the task wrapper, its tokenizer and what we know about it."""

    source: str
    model: TaskModel
    tokenizer: Any
    config: Any
    recipe: Recipe
    task: Task

    @property
    def input_names(self) -> list[str]:
        return self.model.input_names

    @property
    def max_positions(self) -> int:
        """Longest sequence the model accepts (its position embeddings)."""
        limit = getattr(self.config, "max_position_embeddings", None) or DEFAULT_MAX_POSITIONS
        return int(limit)


def _resolve_source(model: str | Path) -> str:
    """A local directory path, or a hub id when no such path exists; refuse paths that are not models."""
    path = Path(model).expanduser()
    if path.exists():
        if not path.is_dir():
            raise TrtQuantError(
                f"{path} is a file, not a model directory: pass the directory holding config.json."
            )
        if not (path / "config.json").is_file():
            raise TrtQuantError(
                f"{path} is not a Hugging Face model directory (no config.json): pass a directory saved with "
                "save_pretrained or a hub id."
            )
        return str(path)
    looks_like_hub_id = str(model).count("/") <= 1 and not str(model).startswith((".", "/", "~"))
    if not looks_like_hub_id:
        raise TrtQuantError(
            f"Model path {model} does not exist: pass an existing model directory or a hub id."
        )
    return str(model)


def model_input_names(model: torch.nn.Module, config: Any) -> list[str]:
    """Inputs the model's forward takes, in a fixed order; token type ids only where the model uses them."""
    accepted = inspect.signature(model.forward).parameters
    names = [name for name in MODEL_INPUTS if name in accepted]
    if "token_type_ids" in names and int(getattr(config, "type_vocab_size", 0) or 0) < 2:
        names.remove("token_type_ids")
    return names


def _has_safetensors(source: str) -> bool | None:
    """True for a local directory holding safetensors weights (then only those are read), else None."""
    directory = Path(source)
    return True if directory.is_dir() and any(directory.glob("*.safetensors")) else None


def _check_head(task: Task, missing_keys: list[str], source: str) -> None:
    untrained = [key for key in missing_keys if key.split(".")[0] in task.head_prefixes]
    if untrained:
        raise TrtQuantError(
            f"{source} has no trained {task.name} head (missing {untrained[0]}): use a model fine-tuned for "
            f"{task.name}, or a task its head fits such as feature-extraction."
        )


def load_model(model: str | Path, task: str, trust_remote_code: bool = False) -> LoadedModel:
    """Load an encoder and its tokenizer for ``task`` in eval mode, float32, safetensors where present."""
    spec = get_task(task)
    source = _resolve_source(model)
    try:
        config = transformers.AutoConfig.from_pretrained(source, trust_remote_code=trust_remote_code)
    except OSError as exc:
        raise TrtQuantError(
            f"Model {source} could not be loaded ({str(exc).splitlines()[0][:120]}): pass a local model directory "
            "or a hub id reachable from this machine."
        ) from exc
    except ValueError as exc:
        raise TrtQuantError(
            f"Model {source} has a config transformers cannot read ({str(exc).splitlines()[0][:120]}): "
            "pass a supported encoder model."
        ) from exc
    recipe = recipe_for(getattr(config, "model_type", "unknown"))
    if spec.name == "question-answering" and config.num_labels != 2:
        raise TrtQuantError(
            f"{source} has {config.num_labels} labels, a question-answering head has 2 (start, end): "
            "use a model fine-tuned for question answering."
        )
    auto_class = getattr(transformers, spec.auto_class)
    previous = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    try:
        network, info = auto_class.from_pretrained(
            source,
            config=config,
            output_loading_info=True,
            trust_remote_code=trust_remote_code,
            dtype=torch.float32,
            attn_implementation="eager",
            use_safetensors=_has_safetensors(source),
        )
    except (OSError, ValueError) as exc:
        raise TrtQuantError(
            f"Model {source} has no {spec.name} weights that fit ({str(exc).splitlines()[0][:120]}): "
            "pass a model directory with weights for this task."
        ) from exc
    finally:
        transformers.logging.set_verbosity(previous)
    _check_head(spec, list(info.get("missing_keys", [])), source)
    tokenizer = transformers.AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code)
    network.eval()
    if spec.auto_class == "AutoModel" and getattr(network, "pooler", None) is not None:
        network.pooler = None  # the pooled output is not a task output: do not quantize or export it
    names = model_input_names(network, config)
    logging.getLogger(__name__).debug("loaded %s (%s) inputs=%s", source, recipe.family, names)
    return LoadedModel(source, TaskModel(network, spec, names).eval(), tokenizer, config, recipe, spec)
