"""An example cnnkit plugin: registers one model (``hello-lenet``) and one command (``hello``).
It imports only from ``cnnkit.api``, the public surface for plugin authors."""

from cnnkit.api import ModelSpec, hookimpl


@hookimpl
def register_models(register):
    register(ModelSpec(
        name="hello-lenet",
        task="classify",
        build="cnnkit_hello.models:lenet5",
        description="LeNet-5 (LeCun et al. 1998) on RGB input",
        paper_params=61_706,  # for 1-channel 32x32 input and 10 classes
        img_size=32,
        num_classes=10,
        default_data="synthetic:textures?size=32",
        recipe={"img_size": 32, "epochs": 5, "optimizer": "adam", "lr": 0.002},
    ))


@hookimpl
def register_commands(app):
    @app.command("hello")
    def hello(name: str = "world") -> None:
        """Say hello from a third-party plugin."""
        print(f"hello, {name}, from cnnkit-hello")
