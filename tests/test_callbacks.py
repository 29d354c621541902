"""The training loop's events reach callbacks; MLflow is one of them."""

from cnnkit.core.base.config import TrainConfig
from cnnkit.core.base.plugins import load_plugins
from cnnkit.core.train.callbacks import Callback
from cnnkit.core.train.trainer import Trainer


class Recorder(Callback):
    def __init__(self) -> None:
        self.events: list[str] = []

    def on_run_start(self, run):
        self.events.append("start")

    def on_epoch_start(self, run, name, total):
        self.events.append(f"epoch_start {total}")

    def on_epoch_end(self, run, name, row):
        self.events.append(f"epoch_end {name} {'val_top1' in row}")

    def on_run_end(self, run, status):
        self.events.append(f"end {status}")


def test_a_callback_sees_the_loop_and_mlflow_logs_the_same_run(tmp_path):
    load_plugins()
    recorder = Recorder()
    config = TrainConfig(model="siamese-small", data="synthetic:glyphs?ids=16&per_id=4&size=16",
                         epochs=2, batch_size=16, img_size=16, out=str(tmp_path / "run"))
    result = Trainer(config, callbacks=[recorder]).fit()
    assert recorder.events[0] == "start" and recorder.events[-1] == "end FINISHED"
    assert [e for e in recorder.events if e.startswith("epoch_end")] == ["epoch_end epoch 1/2 False",
                                                                        "epoch_end epoch 2/2 False"]
    from mlflow import MlflowClient

    run = MlflowClient().get_run(result.run_id)
    assert run.info.status == "FINISHED"
    assert len(MlflowClient().get_metric_history(result.run_id, "val_auc")) == 2
