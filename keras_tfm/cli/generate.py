"""`keras-tfm generate`: sample text from a causal-LM run."""

from keras_tfm.cli.common import positive_int


def add_parser(commands):
    parser = commands.add_parser(
        "generate", help="sample text from a causal LM run",
        description="Continue a prompt with a causal-LM run, with the KV "
        "cache; a generation longer than the model's context slides the "
        "window.",
    )
    parser.add_argument("run_dir", metavar="RUN_DIR",
                        help="a finished causal-LM run's directory")
    parser.add_argument("--prompt", default="",
                        help="text to continue (default: a new document)")
    parser.add_argument("--max-new-tokens", type=positive_int, default=200,
                        help="tokens to generate (default: 200)")
    parser.add_argument("--temperature", type=float, default=1.0,
                        help="0 is greedy; else logits are divided by it "
                        "before sampling (default: 1.0)")
    parser.add_argument("--top-k", type=positive_int, default=None,
                        help="sample among the k most likely tokens "
                        "(default: all)")
    parser.add_argument("--top-p", type=float, default=None,
                        help="sample among the smallest set of tokens whose "
                        "probability reaches p, in (0, 1] (default: all)")
    parser.add_argument("--seed", type=int, default=None,
                        help="makes sampling reproducible (default: random)")
    parser.add_argument(
        "--backend", choices=("keras", "tflite"), default="keras",
        help="keras: the run's model.keras; tflite: the exported "
        "prefill/decode TFLite file under the LiteRT interpreter (default: "
        "keras; choices: keras, tflite)",
    )
    parser.add_argument(
        "--tflite-file",
        help="decoder file for --backend tflite (default: "
        "RUN_DIR/export/tflite/decoder_float32.tflite)",
    )
    return parser


def run(args):
    settings = dict(
        prompt=args.prompt,
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        seed=args.seed,
    )
    if args.backend == "tflite":
        from keras_tfm.export.generate import generate_from_run

        text = generate_from_run(args.run_dir, tflite_file=args.tflite_file,
                                 **settings)
    else:
        from keras_tfm.tasks.language_model import generate_from_run

        text = generate_from_run(args.run_dir, **settings)
    print(args.prompt + text)
