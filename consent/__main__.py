"""``consent`` command: the Flask CLI with the app factory and the service's commands."""

from flask.cli import FlaskGroup

from consent import create_app


def main() -> None:
    """Run the ``consent`` command line."""
    FlaskGroup(create_app=create_app)()


if __name__ == "__main__":
    main()
