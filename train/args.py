"""Command-line flags of ``python -m train.train``; every flag's meaning is in its help text."""

from __future__ import annotations

import argparse


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m train.train",
        description="Train a zeroft checkpoint with the paper's regularized joint training (Jia et al., 2023).",
    )
    models = p.add_argument_group("models")
    models.add_argument("--base_model", required=True, help="diffusers SD-family pipeline: local folder or Hub id")
    models.add_argument("--encoder", default="ViT-H-14",
                        help="object encoder: open_clip model name, hf-hub:org/name, or a local open_clip folder")
    models.add_argument("--encoder_pretrained", default="laion2b_s32b_b79k", help="open_clip pretrained tag")
    models.add_argument("--background_fill", default="gray", choices=["gray", "white", "black", "none"],
                        help="colour replacing the masked-out background of the condition photo")
    models.add_argument("--encoder_views", default="none", choices=["none", "flip", "rot4", "dihedral"],
                        help="average the object embedding over these views of each photo (zeroft.encoder.VIEWS)")
    models.add_argument("--crop_to_object", action=argparse.BooleanOptionalAction, default=True,
                        help="crop the condition photo to the object's box before encoding")
    models.add_argument("--num_tokens", type=int, default=4, help="object tokens per photo (4 = IP-Adapter layout)")
    models.add_argument("--init_checkpoint", default=None,
                        help="start from this zeroft checkpoint's adapter (and unet/, if tuned) instead of fresh weights")
    models.add_argument("--prediction_type", default=None, choices=["epsilon", "v_prediction"],
                        help="override the base scheduler's prediction type")

    data = p.add_argument_group("data")
    data.add_argument("--domain_data", default=None, help="domain-specific records (image, caption, identity, mask?)")
    data.add_argument("--general_data", default=None, help="general-domain records (image, caption)")
    data.add_argument("--split", default="train", help="split of Hub datasets")
    for stream in ("domain", "general"):
        data.add_argument(f"--{stream}_image_column", default="image", help=f"{stream} records: column with the photo")
        data.add_argument(f"--{stream}_caption_column", default="caption", help=f"{stream} records: column with the caption")
    data.add_argument("--domain_identity_column", default="identity", help="domain records: column naming the object")
    data.add_argument("--domain_mask_column", default="mask", help="domain records: optional column with the object mask")
    data.add_argument("--resolution", type=int, default=512, help="training image size (short side, centre crop)")
    data.add_argument("--masker", default="rembg:u2net",
                      help="automatic mask for domain records without a mask column: border | rembg:<model>")
    data.add_argument("--dataloader_num_workers", type=int, default=0, help="worker processes decoding samples")

    reg = p.add_argument_group("the paper's regularizers (sec. 3.4)")
    reg.add_argument("--mix_ratio", type=float, default=0.3, help="r: probability a sample is domain-specific")
    reg.add_argument("--cross_reference", type=float, default=0.5,
                     help="ω: probability of taking the object embedding from ANOTHER photo of the identity (eq. 3)")
    reg.add_argument("--drop_general_object", action=argparse.BooleanOptionalAction, default=True,
                     help="eq. 4: general-domain samples use the null embedding ϕ (--no-drop_general_object "
                          "conditions them on their own photo, as IP-Adapter does)")
    reg.add_argument("--drop_text", type=float, default=0.05, help="probability of dropping only the caption")
    reg.add_argument("--drop_object", type=float, default=0.05, help="probability of dropping only the object")
    reg.add_argument("--drop_both", type=float, default=0.05, help="probability of dropping both conditions")
    reg.add_argument("--mask_condition", action=argparse.BooleanOptionalAction, default=True,
                     help="encode the masked photo x ⊗ m (--no-mask_condition encodes the raw photo)")

    opt = p.add_argument_group("optimisation")
    opt.add_argument("--train", default="whole", choices=["whole", "adapter"],
                     help="whole: UNet + object attention + projection (the paper's default); adapter: the latter two")
    opt.add_argument("--train_batch_size", type=int, default=8, help="per process")
    opt.add_argument("--gradient_accumulation_steps", type=int, default=1, help="micro-batches per optimizer step")
    opt.add_argument("--max_train_steps", type=int, default=10000, help="optimizer steps in all")
    opt.add_argument("--learning_rate", type=float, default=1e-5, help="AdamW learning rate (1e-5 suits whole-UNet tuning)")
    opt.add_argument("--lr_scheduler", default="constant_with_warmup",
                     help="diffusers scheduler name: constant, constant_with_warmup, cosine, linear, ...")
    opt.add_argument("--lr_warmup_steps", type=int, default=500, help="linear warm-up steps")
    opt.add_argument("--adam_weight_decay", type=float, default=1e-2, help="AdamW weight decay")
    opt.add_argument("--max_grad_norm", type=float, default=1.0, help="gradient clipping norm (0: off)")
    opt.add_argument("--mixed_precision", default="no", choices=["no", "fp16", "bf16"],
                     help="autocast precision (fp16 on GPUs; bf16 on recent GPUs and CPUs)")
    opt.add_argument("--cpu", action="store_true", help="train on the CPU even when a CUDA GPU is present")
    opt.add_argument("--gradient_checkpointing", action="store_true", help="recompute activations to save memory")
    opt.add_argument("--use_8bit_adam", action="store_true", help="bitsandbytes AdamW8bit (CUDA only)")
    opt.add_argument("--use_ema", action="store_true", help="keep an EMA of the trained weights and export it")
    opt.add_argument("--ema_decay", type=float, default=0.999, help="EMA decay per step")
    opt.add_argument("--seed", type=int, default=0, help="decides every random draw: data, noise, timesteps")

    run = p.add_argument_group("run")
    run.add_argument("--output_dir", required=True, help="checkpoints, logs, validation grids")
    run.add_argument("--export_dir", default=None, help="final zeroft checkpoint (default: OUTPUT_DIR/final)")
    run.add_argument("--checkpointing_steps", type=int, default=500, help="save the training state every N steps")
    run.add_argument("--checkpoints_total_limit", type=int, default=3, help="keep the last K training states")
    run.add_argument("--resume", default=None, help="'latest' or a checkpoint folder")
    run.add_argument("--report_to", default="tensorboard", choices=["tensorboard", "none"],
                     help="TensorBoard logs go to OUTPUT_DIR/logs")
    run.add_argument("--log_every", type=int, default=10, help="log the loss every N steps")
    run.add_argument("--validation_images", nargs="*", default=[], help="reference photos for the validation grid")
    run.add_argument("--validation_prompts", nargs="*", default=[], help="prompts for the validation grid")
    run.add_argument("--validation_steps", type=int, default=0, help="render the grid every N steps (0: only at the end)")
    run.add_argument("--validation_inference_steps", type=int, default=25,
                     help="sampler steps of validation images; also the exported default")
    run.add_argument("--validation_text_guidance", type=float, default=5.0,
                     help="w_text of validation images; also the exported default")
    run.add_argument("--validation_object_guidance", type=float, default=3.0,
                     help="w_obj of validation images; also the exported default")
    run.add_argument("--push_to_hub", default=None, metavar="REPO", help="upload the final checkpoint to this Hub repo")
    run.add_argument("--hub_token", default=None, help="Hub token (default: the logged-in one)")
    args = p.parse_args(argv)
    if args.domain_data is None and args.general_data is None:
        p.error("give --domain_data and/or --general_data")
    return args
