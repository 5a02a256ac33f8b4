"""`pagoda generate`: load a model, complete one prompt offline, print the completion."""

from __future__ import annotations

import argparse
import sys

from pagoda_worker.engine.config import add_engine_args, engine_config_from_args


def add_parser(subparsers, help_text: str) -> None:
    parser = subparsers.add_parser("generate", help=help_text, description=help_text)
    parser.add_argument(
        "--model",
        default=argparse.SUPPRESS,
        help="a Hugging Face model folder or id (default: the shipped stories260K)",
    )
    parser.add_argument("--prompt", required=True, help="text to complete")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--temperature", type=float, default=0.0, help="0 means greedy")
    parser.add_argument("--top-p", type=float, default=1.0)
    parser.add_argument("--top-k", type=int, default=0)
    parser.add_argument("--min-p", type=float, default=0.0)
    parser.add_argument("--stop", action="append", default=[], help="stop string (repeatable)")
    parser.add_argument("--ignore-eos", action="store_true")
    add_engine_args(parser)


def run(args: argparse.Namespace) -> int:
    # Imported here so that `pagoda --help` stays fast.
    from pagoda_worker.engine.llm import LLM
    from pagoda_worker.engine.sampling_params import SamplingParams, SamplingParamsError
    from pagoda_worker.models.loader import ModelLoadError

    try:
        params = SamplingParams(
            max_tokens=args.max_tokens,
            temperature=args.temperature,
            top_p=args.top_p,
            top_k=args.top_k,
            min_p=args.min_p,
            stop=args.stop,
            ignore_eos=args.ignore_eos,
        )
        config = engine_config_from_args(args)
        with LLM(**vars(config)) as llm:
            [output] = llm.generate(args.prompt, params)
    except SamplingParamsError as exc:
        print(f"pagoda generate: --{exc.field.replace('_', '-')} {exc.reason}", file=sys.stderr)
        return 2
    except (ModelLoadError, ValueError) as exc:
        print(f"pagoda generate: {exc}", file=sys.stderr)
        return 2
    print(args.prompt + output.outputs[0].text)
    return 0
