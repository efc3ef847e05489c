"""Packaging for the Python localtunnel server and client.

The package lives under lib/localtunnel (never a top-level package called `lib`); the two
entry scripts are installed as top-level modules so `gunicorn lt_server:app` and the
`lt-server` / `lt-client` console scripts work from any directory.
"""
from setuptools import setup

setup(
    name="localtunnel-py",
    version="0.1.0",
    description="A self-hostable localtunnel server and client, wire compatible with the Node.js originals",
    python_requires=">=3.11",
    package_dir={"": ".", "localtunnel": "lib/localtunnel"},
    packages=["localtunnel", "localtunnel.wire", "localtunnel.transfer", "localtunnel.server", "localtunnel.inspect"],
    package_data={"localtunnel.inspect": ["static/*"]},
    py_modules=["lt_server", "lt_client"],
    install_requires=[
        "gevent>=24.2",
        "flask>=3.0",
        "gunicorn>=22.0",
        "docopt-ng>=0.9",
        "prometheus-client>=0.20",
    ],
    extras_require={
        # --redis: several server processes and machines sharing one registry.
        "redis": ["redis>=5.0"],
        "test": ["pytest>=8", "pytest-timeout>=2.3", "hypothesis>=6.100", "requests>=2.31", "cryptography>=42",
                 "redis>=5.0", "playwright>=1.40"],
    },
    entry_points={
        "console_scripts": [
            "lt-server = lt_server:run",
            "lt-client = lt_client:run",
        ],
    },
)
