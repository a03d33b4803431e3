"""The installed package's side of the Hub, which saved Hub code reaches by absolute import (never copied next to
weights): model cards (`model_cards`), where referenced base models come from (`references`: `package:`, `cache:`,
GGUF), and the LAION-CLAP checkpoint converter (`convert_laion_clap`)."""
