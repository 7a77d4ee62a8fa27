"""The database the manager shares with the API: models, migrations, store."""
