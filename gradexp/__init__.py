"""gradexp: train Keras MLPs on Fashion-MNIST and see, layer by layer, whether gradients vanish or explode."""

__version__ = "0.1.0"
