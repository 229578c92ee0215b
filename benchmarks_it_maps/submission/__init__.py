"""What goes to Brain-Score: plugin folders, and registration in brainscore-vision's registries."""
