"""AWS adapters: the only modules that talk to AWS. Each translates ClientErrors into domain errors."""
