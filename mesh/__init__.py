"""edgemesh: a peer-to-peer mesh that distributes signed, content-addressed ML models.

Layers (DESIGN §2), enforced by import-linter contracts in ``pyproject.toml``:

* ``mesh.ids`` / ``mesh.errors`` -- value types and the one error hierarchy;
* ``mesh.core`` -- the sans-IO protocol: manifests, trust decisions, chunking;
* ``mesh.crypto`` / ``mesh.store`` / ``mesh.onnxsig`` -- keys, the chunk store,
  reading an ONNX model's interface;
* ``mesh.publish`` -- turning a model file into a signed release in a store;
* ``mesh.cli`` -- the only module that knows about command lines and printing.
"""

__version__ = "0.1.0"

from mesh import _native

_native.select()  # compiled core modules only when they match their source
