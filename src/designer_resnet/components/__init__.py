"""One entry module per component: parse arguments, call the library, report.

Each is runnable as `python -m designer_resnet.components.<name>`; the
`designer-resnet` command lists them as subcommands.
"""

# subcommand name -> module name
COMPONENTS = {
    "convert": "convert_to_image_directory",
    "split": "split_image_directory",
    "init-transform": "init_image_transformation",
    "apply-transform": "apply_image_transformation",
    "resnet": "resnet",
    "densenet": "densenet",
    "train": "train_pytorch_model",
    "score": "score_image_model",
    "merge-scores": "merge_scored_parts",
    "evaluate": "evaluate_model",
}
