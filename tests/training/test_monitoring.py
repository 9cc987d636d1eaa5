import io

import numpy as np
from PIL import Image

from captioner.training.monitoring import CurvesPlotCallback, ProgressCallback, plot_curves


def test_progress_line_shows_throughput_and_eta():
    stream = io.StringIO()
    progress = ProgressCallback(steps_per_epoch=4, epochs=2, interval=0.0, stream=stream)
    progress.on_epoch_begin(1)
    for batch in range(2):
        progress.on_train_batch_end(batch, {"loss": 2.0 + batch, "captions_per_second": 123.4})
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2
    assert lines[-1].startswith("epoch 2/2 2/4 loss 2.5000 123 captions/s ETA 0:00:0")


def test_curves_png_is_redrawn_every_epoch_and_resumable(tmp_path):
    path = tmp_path / "curves.png"
    plot = CurvesPlotCallback(path)
    plot.on_epoch_end(0, {"loss": 3.0, "xent": 2.9, "lr": 1e-3})
    plot.on_epoch_end(1, {"loss": 2.0, "xent": 1.9, "lr": 5e-4, "val_bleu4": 12.0})
    with Image.open(path) as image:
        assert image.size[0] > image.size[1] > 100
    again = CurvesPlotCallback(path)
    again.set_state(plot.get_state())
    assert [row["epoch"] for row in again.rows] == [1, 2]


def test_plot_curves_draws_only_what_exists(tmp_path):
    plot_curves([{"epoch": 1, "loss": 1.0}], tmp_path / "one.png")
    plot_curves([{"epoch": 1, "loss": 1.0, "val_bleu4": 3.0, "lr": 0.1}], tmp_path / "three.png")
    with Image.open(tmp_path / "one.png") as one, Image.open(tmp_path / "three.png") as three:
        assert three.size[0] > 2 * one.size[0]
        assert np.asarray(one).std() > 0


def test_tensorboard_logs_scalars_and_images(tmp_path):
    import keras
    import tensorflow as tf

    from captioner.training.monitoring import TensorBoardCallback

    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="mse")
    model.optimizer.build(model.trainable_variables)
    image = np.zeros((8, 8, 3), np.uint8)
    board = TensorBoardCallback(tmp_path, every=1, epoch_images=lambda e: [("attention/a", image)])
    board.set_model(model)
    board.on_train_batch_end(0, {"loss": 1.5})
    board.on_epoch_end(0, {"loss": 1.25, "val_bleu4": 7.0})
    board.on_train_end()
    tags = set()
    for events in tmp_path.glob("events.out.tfevents.*"):
        for event in tf.compat.v1.train.summary_iterator(str(events)):
            tags.update(value.tag for value in event.summary.value)
    assert {"step/loss", "step/lr", "epoch/loss", "epoch/val_bleu4", "attention/a"} <= tags
